# Copyright (c) infnet-monai contributors
# Licensed under the MIT License.
"""Statistics of 3D segmentations: infection burden per case, anatomical self-checks, the cohort table columns, where
the infection lies (zones and the zone score, the lesion table) and the follow-up comparison of a patient's scans."""

from .anatomy import ANATOMY_KEYS, QC_FLAGS, anatomy_checks
from .burden import BURDEN_FIELDS, BURDEN_KEYS, MM3_PER_ML, NODULE_KEYS, class_burden, infection_burden, nodule_burden
from .followup import FOLLOWUP_COLUMNS, FOLLOWUP_FILE, followup_rows, read_pairs_csv, write_followup_csv
from .lesions import LESION_COLUMNS, LESION_KINDS, LESIONS_FILE, lesion_summary, lesion_table, write_lesion_csv
from .readout import case_readout, to_ras
from .transforms import AnatomyChecks, AnatomyChecksd, CaseReadout, CaseReadoutd, InfectionBurden, InfectionBurdend
from .zones import ZONE_COLUMNS, ZONE_KEYS, ZONE_SCORE_BINS, ZONES_WITHHELD_LUNGS_CUT, zone_columns, zone_distribution

__all__ = [
    "ANATOMY_KEYS",
    "QC_FLAGS",
    "anatomy_checks",
    "BURDEN_FIELDS",
    "BURDEN_KEYS",
    "MM3_PER_ML",
    "NODULE_KEYS",
    "class_burden",
    "infection_burden",
    "nodule_burden",
    "AnatomyChecks",
    "AnatomyChecksd",
    "CaseReadout",
    "CaseReadoutd",
    "InfectionBurden",
    "InfectionBurdend",
    "FOLLOWUP_COLUMNS",
    "FOLLOWUP_FILE",
    "followup_rows",
    "read_pairs_csv",
    "write_followup_csv",
    "LESION_COLUMNS",
    "LESION_KINDS",
    "LESIONS_FILE",
    "lesion_summary",
    "lesion_table",
    "write_lesion_csv",
    "case_readout",
    "to_ras",
    "ZONE_COLUMNS",
    "ZONE_KEYS",
    "ZONE_SCORE_BINS",
    "ZONES_WITHHELD_LUNGS_CUT",
    "zone_columns",
    "zone_distribution",
]
