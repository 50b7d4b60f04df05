"""Searching over pass options: spaces, samplers, ranking and the frontier plot."""
