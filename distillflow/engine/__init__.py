"""Execution: sources, teacher clients, cache/resume, distilabel steps, outputs.

Heavy libraries (distilabel, datasets, aiohttp) are imported inside functions.
"""

import warnings as _warnings

# distilabel 1.5.3's models trip a pydantic 2.12 notice at import; it is noise for our users.
_warnings.filterwarnings("ignore", message="The 'default' attribute with value None", category=UserWarning)
