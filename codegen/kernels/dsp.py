"""Placeholder: lowerings of this family are added here."""
