"""Small helpers every layer uses: input checks, user errors, safe file writes, threads, distributed ranks."""
