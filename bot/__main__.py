from mentiondesk.bot.cli import main

raise SystemExit(main())
