"""What the gateway talks to: Supabase (tokens), NATS (idempotency KV, SSE fan-out, billing's
decisions), billing (prices) and the ledger (reads)."""
