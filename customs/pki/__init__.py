"""Electronic digital signatures: certificates as NCA RK issues them, trust material and CRLs, detached
CMS verification, CRL refresh, and a test PKI shaped like NCA's (for tests, the demo and integration)."""
