"""File formats and safe writing."""
