"""The DICOM node: ``infnet-covid serve`` (a Storage SCP that segments the chest CT series sent to it and sends the
DICOM-SEG and SR back) and pull mode (``infnet-covid segment --from-pacs``), built on pynetdicom.

By role: :mod:`.peers` (``AE@host:port``, AE titles, UIDs checked before they become paths), :mod:`.spool` (instances
on disk by study and series, the outbox), :mod:`.scp` (the listening side), :mod:`.scu` (sending results),
:mod:`.worker` (one segmenter, one case at a time, the node's table in :mod:`.table`), :mod:`.node` (the service
loop) and :mod:`.pull` (query and retrieve). Public names are imported on first use: the command line parses peers
without importing pynetdicom or torch.
"""

from infnet_monai.utils.lazy import lazy_names

__all__, __getattr__, __dir__ = lazy_names(
    __name__,
    {
        "peers": ("AllowedCaller", "Peer", "check_ae_title", "check_uid", "is_uid", "parse_peer"),
        "spool": ("Outbox", "SeriesEntry", "Spool", "SpoolFullError", "SpoolLockedError"),
        "table": ("NodeTable",),
        "scp": ("StorageSCP",),
        "scu": ("ResultSender",),
        "worker": ("CaseWorker",),
        "node": ("DicomNode", "NodeSettings", "serve"),
        "pull": ("PullError", "pull_studies", "read_study_keys"),
    },
)
