"""``sagips-bench``: throughput figures a user can quote (the paper's eq. 9 and its scaling).

Each sub-command measures what it compares side by side in one process or one
MPI job, because machines are noisy, prints a small table and, as its last line,
one JSON object of its key figures.
"""
