from smsgate_server.cli import main

raise SystemExit(main())
