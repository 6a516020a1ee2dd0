"""pyHanko's signing and CMS validation, imported once, without the warning its import prints.

``pyhanko.sign.signers.pdf_cms`` imports ``DSAPrivateKey`` from ``cryptography``, which warns
(``CryptographyDeprecationWarning``: DSA is deprecated) on every start of every command that verifies or signs.
This project never uses DSA (NCA RK issues RSA, EC and GOST keys; a DSA signature is refused as a weak algorithm),
so exactly that warning, raised from that module, is silenced at that import; any other warning still shows.
"""

from __future__ import annotations

import warnings

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"pyhanko\.sign\.signers\.pdf_cms")
    from pyhanko.sign.signers import SimpleSigner
    from pyhanko.sign.validation.generic_cms import extract_certs_for_validation, extract_signer_info, validate_sig_integrity

__all__ = ["SimpleSigner", "extract_certs_for_validation", "extract_signer_info", "validate_sig_integrity"]
