"""Building blocks shared by every backbone."""
