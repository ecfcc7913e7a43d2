"""The claims, one folder per paper: its claim tests, its analysis, its tables."""
