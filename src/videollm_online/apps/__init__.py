"""The applications built on the engine: the command line, narration, rendering, speech, the web demo, the server and
its client."""
