"""Small offline tasks that ship with verl-sdar (demo and tests)."""
