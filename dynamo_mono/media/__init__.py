"""Generated media: the generator contract, encoding, storage of results."""
