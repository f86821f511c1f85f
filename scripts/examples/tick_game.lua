-- tick_game.lua -- the Lua half of tick_host.c: a game that runs a tick 60
-- times a second and offloads its path-finding (A* on a 256x256 grid,
-- about 2 ms a path) to a pool, so that the tick never waits for it.
--
-- tick_host.c loads this file with the mode as its argument and calls
-- game_tick() once per tick; between ticks it polls lmp_backend_fd and
-- calls lmp_dispatch, which runs the callbacks and resumes the coroutines
-- below.  The modes:
--   async   paths through apply_async with a callback, and from a
--           coroutine that awaits each one (the way to do it);
--   naive   pool:map inside the tick: the tick waits for the workers;
--   serial  no pool: the tick computes paths itself, most of each tick.
local lmp = require "lmp"

local MODE = ... or "async"
local IN_FLIGHT = 32  -- paths requested and not back yet (async): the workers never idle
local SERIAL_BUDGET = 0.012  -- seconds of each 16.7 ms tick the serial host computes

-- A* from (sx, sy) to (tx, ty) on the grid of `seed` (35% of its
-- cells are walls): the length of the shortest path, or -1.  It has no
-- upvalues, so a pool sends it to each worker once, and a worker builds
-- each grid once (in a global of its own).
local function find_path(seed, sx, sy, tx, ty)
  local N = 256
  local grids = rawget(_G, "tick_game_grids")
  if not grids then
    grids = {}
    rawset(_G, "tick_game_grids", grids)
  end
  local grid = grids[seed]
  if not grid then
    grid = {}
    local x = seed
    for i = 0, N * N - 1 do
      x = (x * 1103515245 + 12345) % 2147483648
      grid[i] = math.floor(x / 65536) % 100 < 35  -- a wall
    end
    grids[seed] = grid
    grids[seed .. ":g"], grids[seed .. ":seen"], grids[seed .. ":gen"] = {}, {}, 0
  end
  local g, seen = grids[seed .. ":g"], grids[seed .. ":seen"]
  local gen = grids[seed .. ":gen"] + 1  -- marks this search's cells
  grids[seed .. ":gen"] = gen
  local start, goal = sy * N + sx, ty * N + tx
  if grid[start] or grid[goal] then return -1 end
  -- a binary heap of cells, by f = g + Manhattan distance
  local heap, f, n = {}, {}, 0
  local function h(c) return math.abs(c % N - tx) + math.abs(math.floor(c / N) - ty) end
  local function push(c, fc)
    n = n + 1
    local i = n
    while i > 1 do
      local parent = math.floor(i / 2)
      if f[heap[parent]] <= fc then break end
      heap[i] = heap[parent]
      i = parent
    end
    heap[i] = c
    f[c] = fc
  end
  local function pop()
    local top, last = heap[1], heap[n]
    heap[n] = nil
    n = n - 1
    local i, fl = 1, f[last]
    while true do
      local child = 2 * i
      if child > n then break end
      if child < n and f[heap[child + 1]] < f[heap[child]] then child = child + 1 end
      if f[heap[child]] >= fl then break end
      heap[i] = heap[child]
      i = child
    end
    if n > 0 then heap[i] = last end
    return top
  end
  g[start], seen[start] = 0, gen
  push(start, h(start))
  while n > 0 do
    local c = pop()
    if c == goal then return g[c] end
    local x, gc = c % N, g[c] + 1
    for k = 1, 4 do
      local d
      if k == 1 then d = x > 0 and c - 1
      elseif k == 2 then d = x < N - 1 and c + 1
      elseif k == 3 then d = c >= N and c - N
      else d = c < N * (N - 1) and c + N end
      if d and not grid[d] and (seen[d] ~= gen or gc < g[d]) then
        seen[d], g[d] = gen, gc
        push(d, gc + h(d))
      end
    end
  end
  return -1
end

-- The game's requests: random endpoints, always the same sequence.
local rng = 42
local function random(n)
  rng = (rng * 1103515245 + 12345) % 2147483648
  return math.floor(rng / 65536) % n
end
local function request()
  return {7, random(256), random(256), random(256), random(256)}
end

paths_done = 0  -- read by tick_host.c

local pool = MODE ~= "serial" and lmp.Pool(2) or nil
local in_flight = 0

local function arrived()
  in_flight = in_flight - 1
  paths_done = paths_done + 1
end

-- One tick of the game: ask for paths (or, naive and serial, compute them).
function game_tick()
  if MODE == "async" then
    -- Most requests with a callback ...
    while in_flight < IN_FLIGHT - 1 do
      in_flight = in_flight + 1
      pool:apply_async(find_path, request(), arrived)
    end
    -- ... and one at a time from a coroutine, the way game logic reads best.
    if in_flight < IN_FLIGHT then
      in_flight = in_flight + 1
      coroutine.wrap(function()
        pool:apply_async(find_path, request()):await()
        arrived()
      end)()
    end
  elseif MODE == "naive" then
    -- as many paths as the workers could do in a tick, but waited for here
    local batch = {request(), request(), request(), request()}
    pool:starmap(find_path, batch, 1)
    paths_done = paths_done + #batch
  else
    local t0 = os.clock()
    repeat
      find_path(unpack(request()))
      paths_done = paths_done + 1
    until os.clock() - t0 >= SERIAL_BUDGET
  end
end

-- At the end (tick_host.c calls it before lmp_shutdown).
function game_end()
  if pool then pool:terminate() end
end
