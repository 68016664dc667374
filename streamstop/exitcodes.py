"""Process exit codes of every command (SPEC "Exit codes")."""

EXIT_OK = 0
EXIT_FAILURE = 1  # internal fatal error, or a second signal during shutdown
EXIT_CONFIG = 2  # configuration that validation can see
EXIT_KAFKA = 3  # `topics`: Kafka unreachable, or it refused (authentication, authorization)
EXIT_BUSY = 4  # `redrive`: another redrive runs in its consumer group
EXIT_INTERRUPTED = 130  # `redrive`: stopped by SIGINT/SIGTERM, progress saved (128 + SIGINT)
