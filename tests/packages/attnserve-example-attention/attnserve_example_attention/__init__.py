"""A user's own attention score (`cosine`) and model (`cosine-pointer`), served by attnserve."""
