"""A generation seen from HTTP: the create command (`submit`), cancel and queue place (`control`),
reading it (`views`), its events as SSE (`sse`)."""
