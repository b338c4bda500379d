"""Positions qexec tracks, their stop-loss and take-profit at the venue, and beat's exit monitor."""
