"""Masked branches: rules that say how each column's values are replaced."""
