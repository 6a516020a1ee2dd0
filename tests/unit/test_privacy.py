"""Masking private persons' data for what Prefect shows (customs.rules.privacy, issue 23 part 4)."""

from __future__ import annotations

import logging

from customs.rules.privacy import PrivateDataFilter, initials, is_iin, mask_iin, mask_private


def test_an_iin_is_masked_and_a_bin_is_not():
    assert mask_iin("860101300123") == "8601******23"
    assert is_iin("860101300123") and is_iin("880501300124")
    assert not is_iin("050840001233")  # a BIN: its fifth digit (4) says a resident legal entity
    assert not is_iin("86010130012") and not is_iin("8601013001234") and not is_iin("86010130012a")
    text = "signed by IIN 910312300452 (NCA role: none), not by the declarant (IIN 880501300124); BIN 050840001233"
    assert mask_private(text) == (
        "signed by IIN 9103******52 (NCA role: none), not by the declarant (IIN 8805******24); BIN 050840001233"
    )
    assert mask_private("SERIALNUMBER=IIN860101300123") == "SERIALNUMBER=IIN8601******23"
    # part of a longer number (an account, a registration number's digits run together) is not an IIN
    assert mask_private("KZ860101300123456789 50101/071226/0000001") == "KZ860101300123456789 50101/071226/0000001"


def test_names_become_initials():
    assert initials("Тестов Тест Тестович") == "Т. Т. Т."
    assert initials("ПОСТОРОННИЙ ПОДПИСАНТ") == "П. П."
    assert initials("") == ""
    subject = (
        "CN=ТЕСТОВ ТЕСТ,SURNAME=ТЕСТОВ,GIVENNAME=ТЕСТОВИЧ,SERIALNUMBER=IIN880501300124,C=KZ,O=ТОО «Алатау Импорт»,"
        "OU=BIN050840001233"
    )
    assert mask_private(subject) == (
        "CN=Т. Т.,SURNAME=Т.,GIVENNAME=Т.,SERIALNUMBER=IIN8805******24,C=KZ,O=ТОО «Алатау Импорт»,OU=BIN050840001233"
    )
    # an attribute's value runs to the next unescaped , or + (a subject in free text: over-masking, never under)
    assert mask_private("of CN=Doe\\, John+SN=Doe,C=KZ revoked") == "of CN=D. J.+SN=D.,C=KZ revoked"
    text = "the declarant тестов тест тестович (Тестов Тест) asked"
    assert mask_private(text, names=["Тестов Тест Тестович", "Тестов Тест", None]) == "the declarant Т. Т. Т. (Т. Т.) asked"


def test_email_addresses_keep_their_first_character_and_domain():
    assert mask_private("notice 7 to testov@example.kz: 550 mailbox") == "notice 7 to t***@example.kz: 550 mailbox"


def test_the_log_filter_masks_messages_arguments_and_tracebacks():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    logger = logging.getLogger("customs.test.privacy")
    logger.propagate = False
    logger.addFilter(PrivateDataFilter())
    logger.addHandler(Keep())
    try:
        logger.error("%s failed: %s", "A1", "CN=ТЕСТОВ ТЕСТ,SERIALNUMBER=IIN880501300124")
        try:
            raise RuntimeError("signer 880501300124 unknown")
        except RuntimeError:
            logger.exception("step failed")
    finally:
        logger.handlers.clear()
        logger.filters.clear()
    joined = "\n".join(records)
    assert "880501300124" not in joined and "ТЕСТОВ ТЕСТ" not in joined
    assert "A1 failed: CN=Т. Т.,SERIALNUMBER=IIN8805******24" in joined
    assert "RuntimeError: signer 8805******24 unknown" in joined  # the traceback too


def test_digits_inside_a_serial_or_a_hash_are_not_taken_for_an_iin():
    """A certificate's hexadecimal serial held twelve digits in a row: the log showed it half masked."""
    from customs.rules.privacy import mask_private

    serial = "36434c286b8dc5e05d874489c5e1895101231270c"
    assert mask_private(f"signed act certificate serial {serial}") == f"signed act certificate serial {serial}"
    sha = "ab" + "860101300123" + "cd"
    assert mask_private(sha) == sha
    assert "860101300123" not in mask_private("SERIALNUMBER=IIN860101300123,CN=X")
    assert "860101300123" not in mask_private("IIN 860101300123 signed")
