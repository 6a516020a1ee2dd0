"""GOST algorithms of Kazakhstan's NCA RK signatures: the hash functions (``hashes``, in C: ``_hashes.c``)."""
