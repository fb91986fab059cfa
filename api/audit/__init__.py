"""Auditor surfaces: the read-only audit API (``router``, mounted under ``/audit``) and the reports
it and the CLI serve (:mod:`api.audit.reports`)."""

from api.audit.router import AuditServices, Principal, audit_services, auditor, router

__all__ = ["AuditServices", "Principal", "audit_services", "auditor", "router"]
