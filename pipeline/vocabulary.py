"""The project's fixed words, in one place: substances, the family name, FDA role codes, MGPS likelihoods and the
FDA page the quarterly files come from.

Everything else imports these names; the DAG files, which must not import ``pipeline`` when Airflow parses them,
repeat the lists as literals and ``tests/test_vocabulary.py`` checks that they still agree.
"""

from __future__ import annotations

#: Ketamine-family substances, in report order. ``ketamine`` is the racemate (or a name that does not say which
#: form); ``esketamine`` = S-(+)-ketamine, ``arketamine`` = R-(-)-ketamine, ``norketamine`` = the N-demethylated
#: metabolite. Other metabolites (hydroxynorketamine, dehydronorketamine) are not members.
SUBSTANCES: tuple[str, ...] = ("ketamine", "esketamine", "arketamine", "norketamine")

#: Pseudo-substance of the report tables: a report exposed to any member of :data:`SUBSTANCES`.
FAMILY = "ketamine_family"

#: Everything a report can be asked about, family last.
FOCUS_SUBSTANCES: tuple[str, ...] = SUBSTANCES + (FAMILY,)

#: FDA DRUG.role_cod values and their meaning.
ROLES: dict[str, str] = {"PS": "primary suspect", "SS": "secondary suspect", "C": "concomitant",
                         "I": "interacting"}
ROLE_CODES: tuple[str, ...] = tuple(ROLES)

#: MGPS prior likelihoods (``pipeline.stats.mgps``); the first is the default.
MGPS_LIKELIHOODS: tuple[str, ...] = ("openebgm", "conditional", "zero-inclusive")

#: FDA's page listing the FAERS Quarterly Data Extract zips (the default ``--source``).
FDA_QUARTERLY_PAGE = "https://fis.fda.gov/extensions/FPD-QDE-FAERS/FPD-QDE-FAERS.html"
