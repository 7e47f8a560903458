"""API wire models (validated once per request) and error envelopes."""
