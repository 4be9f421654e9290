"""A local stand-in for the Hugging Face hub: real HTTP on loopback, answering the requests huggingface_hub makes.

`HF_ENDPOINT=server.url` sends the real library here. It serves, per repository, the revision info
(`/api/models/{repo}/revision/{rev}`: sha and siblings), the file tree (`/api/models/{repo}/tree/{rev}`) and the
files (`/{repo}/resolve/{rev}/{path}`, HEAD and GET, with the X-Repo-Commit / ETag / Content-Length headers the
library reads). A gated repository answers 403 with `X-Error-Code: GatedRepo`, as the hub does. Every request is
recorded, so a test can show that nothing was asked.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Repo:
    def __init__(self, repo_id: str, directory: Path, gated: bool = False):
        self.repo_id, self.gated = repo_id, gated
        self.files = {
            p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
        }
        self.sha = hashlib.sha1(repo_id.encode() + b"".join(self.files.values())).hexdigest()

    def tree(self) -> list[dict]:
        return [
            {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
            for path, data in self.files.items()
        ]


class FakeHub:
    """`with FakeHub() as hub: hub.add("owner/name", directory)`; `hub.requests` lists (method, path)."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, repo_id: str, directory: Path, gated: bool = False) -> Repo:
        self.repos[repo_id] = Repo(repo_id, Path(directory), gated)
        return self.repos[repo_id]

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ routing
    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append((handler.command, handler.path))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            repo = self.repos.get(f"{parts[2]}/{parts[3]}")
            if self.refuse(handler, repo, body):
                return
            if parts[4] == "revision":
                info = {
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "sha": repo.sha,
                    "private": False,
                    "gated": False,
                    "siblings": [{"rfilename": name} for name in repo.files],
                }
            else:
                info = repo.tree()
            self.send(handler, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.repos.get(f"{parts[0]}/{parts[1]}")
            if self.refuse(handler, repo, body):
                return
            name = "/".join(parts[4:])
            if name not in repo.files:
                self.send(handler, 404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.sha}, body)
                return
            data = repo.files[name]
            etag = hashlib.sha256(data).hexdigest()
            self.send(
                handler,
                200,
                data,
                {"X-Repo-Commit": repo.sha, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"},
                body,
            )
            return
        self.send(handler, 404, b"", {"X-Error-Code": "RepoNotFound"}, body)

    def refuse(self, handler, repo: Repo | None, body: bool) -> bool:
        if repo is None:
            self.send(
                handler,
                401,
                b'{"error":"Repository not found"}',
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
                body,
            )
            return True
        if repo.gated:
            message = f"Access to model {repo.repo_id} is restricted. You must have access to it and be authenticated."
            self.send(
                handler,
                403,
                json.dumps({"error": message}).encode(),
                {"X-Error-Code": "GatedRepo", "X-Error-Message": message},
                body,
            )
            return True
        return False

    @staticmethod
    def send(handler, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)
