-- lmp.pool.progress: the progress bar of a pool call ({progress = true}),
-- drawn on stderr, and only when stderr is a terminal.
--
-- progress(total) returns bar(n [, final]): n items of `total` (nil: an
-- iterator of unknown length) are done.  Redrawn at most ten times a
-- second; `final` draws the last state and ends the line.
return function(core)
  local floor = math.floor

  return function(total)
    if not core.isatty(2) then return function() end end
    local t0, last = core.now(), 0
    return function(n, final)
      local t = core.now()
      if not final and t - last < 0.1 then return end
      last = t
      local rate = n / math.max(t - t0, 1e-9)
      local line
      if total and total > 0 then
        local width = 30
        local filled = floor(width * n / total)
        local eta = rate > 0 and (total - n) / rate or 0
        line = ("\r[%s%s] %d/%d  %.1f/s  ETA %ds "):format(("#"):rep(filled),
          ("."):rep(width - filled), n, total, rate, floor(eta + 0.5))
      else
        line = ("\r%d done  %.1f/s "):format(n, rate)
      end
      io.stderr:write(line, final and "\n" or "")
      io.stderr:flush()
    end
  end
end
