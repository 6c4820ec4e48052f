"""Factual memory: conversations in, standalone memory units out, retrieved per user."""
