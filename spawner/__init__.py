"""afhub.spawner: profiles, the spawn form, validation of user options and backends."""
