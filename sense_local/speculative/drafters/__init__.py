"""Drafters: each proposes continuations after the committed sequence."""
