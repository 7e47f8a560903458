"""Scale-out: worker processes that host engines, and the server-side registry that routes to them."""
