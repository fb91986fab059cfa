"""crmhub governance package."""

# --- lineage ledger, Merkle tree, OpenLineage export, subprocessor/transfer registry -------------
from governance.lineage import (
    CheckpointSigner,
    Ledger,
    build_report,
    load_public_key,
    report_from_json,
    report_to_json,
    verify,
    verify_checkpoint,
)
from governance.merkle import MerkleProofError, MerkleTree, verify_consistency, verify_inclusion
from governance.openlineage import run_events, run_events_json
from governance.registry import Registry, load_registry, transfer_event

__all__ = [
    "CheckpointSigner",
    "Ledger",
    "MerkleProofError",
    "MerkleTree",
    "Registry",
    "build_report",
    "load_public_key",
    "load_registry",
    "report_from_json",
    "report_to_json",
    "run_events",
    "run_events_json",
    "transfer_event",
    "verify",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
]
