"""paper-copy: the copy of one print request, rendered after the request is recorded.

The request is recorded and queued at once (the 30 minutes run from then); this run, created with it, renders
the copy in a process of its own and stores it with its SHA-256, so the official can print it. The
every-minute print-deadlines pass renders any copy whose run never came (Prefect down when it was asked).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.printing import render_paper_copy


@flow(name="paper-copy", flow_run_name="copy-{request_id}", persist_result=False)
def paper_copy(request_id: str) -> dict:
    outcome = render_paper_copy(request_id)
    if outcome["rendered"]:
        get_run_logger().info(
            "copy of %s rendered in %.1f s: %d bytes, SHA-256 %s",
            request_id,
            outcome["seconds"],
            outcome["bytes"],
            outcome["pdf_sha256"],
        )
    else:
        get_run_logger().info("copy of %s not rendered here: %s", request_id, outcome["note"])
    return outcome


if __name__ == "__main__":
    import sys

    print(paper_copy(sys.argv[1]))
