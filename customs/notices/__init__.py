"""Documents to people: notices rendered from the templates (text, HTML, decision.json), the paper copy
as PDF, the support report's attachments, and the transports that deliver e-mail (aiosmtplib or .eml)."""
