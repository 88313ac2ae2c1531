"""Everything that talks to Redis: key layout, Lua scripts, stores."""
