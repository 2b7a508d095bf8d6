"""Lightning callbacks shared by every backend."""
