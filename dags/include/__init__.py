"""Helpers shared by the DAG files (the include/ pattern); no DAGs here. The DAG bundle root is on sys.path."""
