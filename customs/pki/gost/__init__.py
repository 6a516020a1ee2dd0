"""GOST signatures as NCA RK issues them: GOST 34.310-2004 keys with the GOST 34.311-95 hash, and GOST 34.10-2015
keys (256 and 512 bits) with the GOST 34.11-2015 hash (Streebog). See docs/explanation/signatures.md."""
