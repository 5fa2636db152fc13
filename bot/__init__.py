"""mailcheck: find out why a Linux mail server cannot send or receive mail."""
