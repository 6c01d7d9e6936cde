"""Data: the corpus registry, the built-in corpora, and memory-mapped token files.

Importing this package registers the built-in corpora (``shakespeare``, ``python_stdlib``) and parallel corpora (the
gettext catalogs of lmlab.data.po_catalogs).
"""

from lmlab.data import shakespeare as _shakespeare  # noqa: F401  (registers "shakespeare")
from lmlab.data import python_stdlib as _python_stdlib  # noqa: F401  (registers "python_stdlib")
from lmlab.data import po_catalogs as _po_catalogs  # noqa: F401  (registers the gettext parallel corpora)
from lmlab.data.cache import cache_dir
from lmlab.data.corpora import Corpus, available_corpora, get_corpus, register_corpus
from lmlab.data.token_file import read_token_file, write_token_file

__all__ = [
    "Corpus",
    "available_corpora",
    "cache_dir",
    "get_corpus",
    "read_token_file",
    "register_corpus",
    "write_token_file",
]
