"""tools package (see issue roadmap); intentionally empty until its issue lands."""
