"""Example dynamo-mono plugin: an echo engine and a `[[...]]` reasoning parser."""
