"""Local stand-ins for the SMS vendors: their wire format, error codes and
signature checks, served on loopback."""
