"""HTTP routes, one module per resource (`common` holds the dependencies they share)."""
