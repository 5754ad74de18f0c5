"""The ai service: an OpenAI-compatible model gateway on the CCC bus."""
