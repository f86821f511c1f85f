-- lmp.pool.imap: Pool:imap and Pool:imap_unordered.
--
-- The input (an array or an iterator function) is consumed lazily: at
-- most `buffersize` chunks are ahead of what the caller has taken, so an
-- endless generator runs in constant memory.  The results reach a sink,
-- not an AsyncResult: a failed chunk gives one entry, its error, at its
-- first index, and the items after it go on.
return function(core, lmp, I, pump, progress, Pool, A)
  local floor = math.floor
  local pack = require "lmp.pool.pack"
  local BUFFER_PER_WORKER = 4  -- chunks ahead of the caller, per worker

  local function imap(self, what, ordered, fn, iterable, ...)
    local opts, npos = A.trailing_options(...)
    local chunksize = npos >= 1 and (...) or nil
    local o = A.call_options(self, what, fn, opts)
    if o.callback or o.error_callback then
      I.raise("ValueError", "%s: takes no callback (its results come from the iterator)", what)
    end
    if chunksize == nil then chunksize = 1 end
    A.check_positive_integer(chunksize, what, "chunksize")
    local limit = o.buffersize or BUFFER_PER_WORKER * self.size
    local source
    if type(iterable) == "table" then
      local i, n = 0, #iterable
      source = function()
        if i >= n then return nil end
        i = i + 1
        return iterable[i]
      end
    elseif type(iterable) == "function" then
      source = iterable
    else
      I.raise("TypeError", "%s: expected an array table or an iterator function, not %s",
              what, type(iterable))
    end
    local exhausted, submitted, outstanding = false, 0, 0
    local done = {}        -- index -> {ok, value}
    local order = {first = 1, last = 0}  -- imap_unordered: completion order
    local next_index, total = 1, nil
    local bar = o.progress and progress(nil)
    local sizes = {}  -- first index of a chunk in flight -> its item count
    local sink = {opts = o, _chunk = function(_, base, ok, values)
      if ok and type(values) == "string" then values = pack.unpack(values) end
      local n = ok and (values.n or #values) or 1
      if ok then sizes[base] = nil end
      for i = 1, n do
        if ok then done[base + i - 1] = {true, values[i]}
        else done[base + i - 1] = {false, values} end
        if not ordered then
          order.last = order.last + 1
          order[order.last] = base + i - 1
        end
      end
    end}
    A.function_frame(self, fn, sink)
    local function fill()
      while not exhausted and outstanding < limit do
        local items = {}
        for i = 1, chunksize do
          local v = source()
          if v == nil then exhausted = true break end
          items[i] = v
        end
        local n = #items
        if n > 0 then
          items.n = n
          sizes[submitted + 1] = n
          A.submit(self, false, items, sink, submitted + 1)
          submitted = submitted + n
          outstanding = outstanding + 1
        end
        if exhausted then total = submitted end
      end
    end
    local consumed_in_chunk, since_compact = 0, 0
    -- Hands entry i to the caller: `span` items are done with (a failed
    -- chunk counts for all its items).
    local function take(i, r)
      done[i] = nil
      local span = 1
      if not r[1] then
        span = sizes[i] or 1
        sizes[i] = nil
      end
      next_index = ordered and i + span or next_index + span
      consumed_in_chunk = consumed_in_chunk + span
      outstanding = outstanding - floor(consumed_in_chunk / chunksize)
      consumed_in_chunk = consumed_in_chunk % chunksize
      if bar then bar(next_index - 1) end
      -- `done`, `order` and `sizes` are keyed by ever larger numbers;
      -- LuaJIT keeps the room of keys long gone, so they are copied now and
      -- then to keep memory constant over an endless input.
      since_compact = since_compact + span
      if since_compact >= 4096 then
        since_compact = 0
        local d, z = {}, {}
        for k, v in pairs(done) do d[k] = v end
        for k, v in pairs(sizes) do z[k] = v end
        done, sizes = d, z
        local c = {first = order.first, last = order.last}
        for k = order.first, order.last do c[k] = order[k] end
        order = c
      end
      if not r[1] then error(r[2], 0) end
      return i, r[2]
    end
    return function()
      fill()
      while true do
        if total and next_index > total then
          if bar then bar(total, true) end
          return nil
        end
        if ordered then
          local r = done[next_index]
          if r then return take(next_index, r) end
        elseif order.first <= order.last then
          local i = order[order.first]
          order[order.first] = nil
          order.first = order.first + 1
          return take(i, done[i])
        end
        pump.pump(nil)
        fill()
      end
    end
  end

  function Pool:imap(fn, iterable, ...) return imap(self, "Pool:imap", true, fn, iterable, ...) end
  function Pool:imap_unordered(fn, iterable, ...)
    return imap(self, "Pool:imap_unordered", false, fn, iterable, ...)
  end
end
