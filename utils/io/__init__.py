"""Reading and writing the project's files: MetaImage volumes with their geometry, atomic writes, case discovery,
the work-dir layout and the CSV tables (slice index, split) that the stages hand to one another."""
