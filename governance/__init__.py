"""crmhub governance package."""

# --- lineage ledger, Merkle tree, OpenLineage export, subprocessor/transfer registry -------------
# --- vault, key providers, pseudonymization, purpose-limitation policy ---------------------------
from governance.keys import EnvKeyProvider, KeyProvider, LocalKeyringProvider, load_key_provider
from governance.lineage import (
    CheckpointSigner,
    Ledger,
    RunRef,
    build_report,
    load_public_key,
    report_from_json,
    report_to_json,
    verify,
    verify_checkpoint,
)
from governance.merkle import MerkleProofError, MerkleTree, verify_consistency, verify_inclusion
from governance.openlineage import run_events, run_events_json
from governance.policy import (
    CheckResult,
    PlanRefused,
    ProcessingInstruction,
    Projection,
    SyncPlan,
    Transform,
    TransformRegistry,
    apply_transforms,
    check,
    load_instruction,
    project,
    register_transform,
)
from governance.pseudonym import Pseudonymizer, PseudonymKeySource, StaticKeySource
from governance.registry import Registry, load_registry, transfer_event
from governance.vault import (
    AesGcm,
    DeletionCertificate,
    KeyInfo,
    RewrapReport,
    TenantKeysDestroyed,
    Vault,
    key_version_of,
)

__all__ = [
    "AesGcm",
    "CheckResult",
    "CheckpointSigner",
    "DeletionCertificate",
    "EnvKeyProvider",
    "KeyInfo",
    "KeyProvider",
    "Ledger",
    "LocalKeyringProvider",
    "MerkleProofError",
    "MerkleTree",
    "PlanRefused",
    "ProcessingInstruction",
    "Projection",
    "PseudonymKeySource",
    "Pseudonymizer",
    "Registry",
    "RewrapReport",
    "RunRef",
    "StaticKeySource",
    "SyncPlan",
    "TenantKeysDestroyed",
    "Transform",
    "TransformRegistry",
    "Vault",
    "apply_transforms",
    "build_report",
    "check",
    "key_version_of",
    "load_instruction",
    "load_key_provider",
    "load_public_key",
    "load_registry",
    "project",
    "register_transform",
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
