-- lmp.pool.imap: Pool:imap and Pool:imap_unordered.
--
-- The input (an array or an iterator function) is consumed lazily: at
-- most `buffersize` chunks are ahead of what the caller has taken, so an
-- endless generator runs in constant memory.  The results reach the
-- iterator itself, as the job of its tasks: a failed chunk gives one
-- entry, its error, at its first index, and the items after it go on.
--
-- The iterator is a callable table, its state, not a closure.  A JIT
-- trace that calls a closure keeps that closure (and all it refers to)
-- alive until the trace is flushed: a closure over the pool would keep an
-- abandoned iterator's pool, and its workers, alive after the program let
-- go of both.  The methods below are shared by every iterator; the state
-- reaches them as an argument, which no trace keeps.
return function(core, lmp, I, pump, progress, Pool, A)
  local floor = math.floor
  local pack = require "lmp.pool.pack"
  local BUFFER_PER_WORKER = 4  -- chunks ahead of the caller, per worker

  local Imap = {}
  Imap.__index = Imap

  -- The next item of the input, or nil at its end.
  local function pull(it)
    local list = it.list
    if not list then return it.gen() end
    local i = it.pos
    if i >= it.len then return nil end
    i = i + 1
    it.pos = i
    return list[i]
  end

  -- Submits chunks until `limit` are ahead of the caller, or the input ends.
  local function fill(it)
    local chunksize = it.chunksize
    while not it.exhausted and it.outstanding < it.limit do
      local items = {}
      for i = 1, chunksize do
        local v = pull(it)
        if v == nil then it.exhausted = true break end
        items[i] = v
      end
      local n = #items
      if n > 0 then
        items.n = n
        local base = it.submitted + 1
        it.sizes[base] = n
        A.submit(it.pool, false, items, it, base)
        it.submitted = it.submitted + n
        it.outstanding = it.outstanding + 1
      end
      if it.exhausted then it.total = it.submitted end
    end
  end

  -- A chunk is over (lmp.pool.scheduler): `base` is its first index.
  function Imap:_chunk(base, ok, values)
    if ok and type(values) ~= "table" then values = pack.unpack(values) end
    local n = ok and (values.n or #values) or 1
    if ok then self.sizes[base] = nil end
    local done, order = self.done, self.order
    for i = 1, n do
      if ok then done[base + i - 1] = {true, values[i]}
      else done[base + i - 1] = {false, values} end
      if not self.ordered then
        order.last = order.last + 1
        order[order.last] = base + i - 1
      end
    end
  end

  -- Hands entry i to the caller: `span` items are done with (a failed chunk
  -- counts for all its items).
  local function take(it, i, r)
    it.done[i] = nil
    local span = 1
    if not r[1] then
      span = it.sizes[i] or 1
      it.sizes[i] = nil
    end
    it.next_index = it.ordered and i + span or it.next_index + span
    local consumed = it.consumed_in_chunk + span
    it.outstanding = it.outstanding - floor(consumed / it.chunksize)
    it.consumed_in_chunk = consumed % it.chunksize
    if it.bar then it.bar(it.next_index - 1) end
    -- `done`, `order` and `sizes` are keyed by ever larger numbers;
    -- LuaJIT keeps the room of keys long gone, so they are copied now and
    -- then to keep memory constant over an endless input.
    it.since_compact = it.since_compact + span
    if it.since_compact >= 4096 then
      it.since_compact = 0
      local d, z = {}, {}
      for k, v in pairs(it.done) do d[k] = v end
      for k, v in pairs(it.sizes) do z[k] = v end
      it.done, it.sizes = d, z
      local order = it.order
      local c = {first = order.first, last = order.last}
      for k = order.first, order.last do c[k] = order[k] end
      it.order = c
    end
    if not r[1] then error(r[2], 0) end
    return i, r[2]
  end

  -- The next index, result; nil at the end.
  function Imap.__call(it)
    fill(it)
    while true do
      local total = it.total
      if total and it.next_index > total then
        if it.bar then it.bar(total, true) end
        return nil
      end
      if it.ordered then
        local r = it.done[it.next_index]
        if r then return take(it, it.next_index, r) end
      else
        local order = it.order
        if order.first <= order.last then
          local i = order[order.first]
          order[order.first] = nil
          order.first = order.first + 1
          return take(it, i, it.done[i])
        end
      end
      local ok, err = pcall(pump.pump, nil)
      if not ok then
        -- Ctrl-C: the loop is given up, so are its tasks (as AsyncResult:wait)
        if lmp.is_error(err, "KeyboardInterrupt") then
          it.pool:_cancel(it)
          it.exhausted, it.total = true, it.next_index - 1
        end
        error(err, 0)
      end
      fill(it)
    end
  end

  local function imap(self, what, ordered, fn, iterable, ...)
    local opts, npos = A.trailing_options(...)
    local chunksize = npos >= 1 and (...) or nil
    local o, cb, ecb = A.call_options(self, what, fn, opts)
    if cb or ecb then
      I.raise("ValueError", "%s: takes no callback (its results come from the iterator)", what)
    end
    if chunksize == nil then chunksize = 1 end
    A.check_positive_integer(chunksize, what, "chunksize")
    local it = setmetatable({
      pool = self, ordered = ordered, opts = o, chunksize = chunksize,
      limit = o.buffersize or BUFFER_PER_WORKER * self.size,
      exhausted = false, submitted = 0, outstanding = 0, total = nil,
      done = {},                      -- index -> {ok, value}
      order = {first = 1, last = 0},  -- imap_unordered: completion order
      sizes = {},                     -- first index of a chunk in flight -> its item count
      next_index = 1, consumed_in_chunk = 0, since_compact = 0,
      bar = o.progress and progress(nil),
    }, Imap)
    if type(iterable) == "table" then
      it.list, it.pos, it.len = iterable, 0, #iterable
    elseif type(iterable) == "function" then
      it.gen = iterable
    else
      I.raise("TypeError", "%s: expected an array table or an iterator function, not %s",
              what, type(iterable))
    end
    A.function_frame(self, fn, it)
    return it
  end

  function Pool:imap(fn, iterable, ...) return imap(self, "Pool:imap", true, fn, iterable, ...) end
  function Pool:imap_unordered(fn, iterable, ...)
    return imap(self, "Pool:imap_unordered", false, fn, iterable, ...)
  end
end
