"""Transports between the server and worker processes: framed control streams and bulk KV-block transfer."""
