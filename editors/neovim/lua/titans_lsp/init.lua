-- titans-lsp for Neovim (0.12+: vim.lsp.config, vim.lsp.enable, vim.lsp.inline_completion).
-- Usage: require('titans_lsp').setup({ settings = { titansLsp = { mode = 'memory' } } })
local M = {}

M.modes = { 'none', 'concat', 'memory', 'ablation', 'hybrid' }

M.defaults = {
  -- Command that starts the server; `serve --stdio` is part of it. Default: titans-lsp on PATH,
  -- or the `.venv/bin/titans-lsp` of the project you open.
  cmd = nil,
  -- Languages the server reads with a grammar (retrieval/languages.py); any other filetype works as plain text.
  filetypes = { 'python', 'typescript', 'typescriptreact', 'javascript', 'javascriptreact', 'java', 'go', 'rust',
    'cs', 'c', 'cpp' },
  root_markers = { 'pyproject.toml', 'setup.py', 'setup.cfg', 'tsconfig.json', 'package.json', 'go.mod', 'Cargo.toml',
    '.git' },
  -- Sent to the server as workspace/configuration answers (section `titansLsp`).
  settings = { titansLsp = { mode = 'concat' } },
  -- initializationOptions: { model = ..., device = ..., dtype = ... }
  init_options = {},
  -- With cmd = vim.lsp.rpc.connect(host, port) to `titans-lsp serve --tcp HOST:PORT --auth-token-file FILE`:
  -- that FILE; its token is sent as init_options.authToken.
  auth_token_file = nil,
  -- Insert-mode key that accepts the ghost text (falls back to the key itself); false: no mapping.
  accept_key = '<Tab>',
  -- Turn on vim.lsp.inline_completion for the server's buffers.
  inline_completion = true,
  -- Tell the server where the cursor rests (`titans/cursor`, 250 ms after the last move, and on
  -- BufEnter/WinEnter/InsertEnter) so it pre-fills the completion prompt there in the background.
  prewarm = true,
}

--- The cursor has rested when it has not moved for this long.
M.rest_ms = 250

--- Latest `titans/status` notification per workspace folder URI.
M.status = {}

--- titans clients that have sent initialize and have no answer yet (a server still starting).
M.starting = 0
local initialized = {} -- client id -> true once its server answered initialize

--- How the last titans client ended when it did not stop cleanly ({ code, signal }), so the
--- statusline says the server is down instead of going blank; cleared when a client attaches.
M.exited = nil

--- A server command not answered by then is reported (it may still answer: priming takes long).
M.request_timeout_ms = 20000

local config = vim.deepcopy(M.defaults)

--- The server command: titans-lsp from the project's .venv when present, else from PATH.
local function default_cmd(dispatchers, client_config)
  local exe = 'titans-lsp'
  local root = (client_config and client_config.root_dir) or vim.fs.root(0, config.root_markers)
  if root and vim.fn.executable(root .. '/.venv/bin/titans-lsp') == 1 then
    exe = root .. '/.venv/bin/titans-lsp'
  end
  return vim.lsp.rpc.start({ exe, 'serve', '--stdio' }, dispatchers, { cwd = root })
end

--- Why `cmd` cannot start the server, or nil. Neovim only logs an unusable cmd (lsp.log) and starts
--- nothing, so setup() tells the user instead.
local function cmd_problem(cmd)
  if cmd == nil or type(cmd) == 'function' then
    return nil
  end
  if type(cmd) ~= 'table' or type(cmd[1]) ~= 'string' then
    return ("cmd must be a list like { 'titans-lsp', 'serve', '--stdio' } or a function, got %s"):format(vim.inspect(cmd))
  end
  if vim.fn.executable(cmd[1]) == 0 then
    return ('cmd: %s is not an executable (missing, or not on PATH); point cmd at the titans-lsp of your environment')
      :format(cmd[1])
  end
  return nil
end

local function clients(bufnr)
  return vim.lsp.get_clients({ name = 'titans', bufnr = bufnr })
end

--- Sends `titans/cursor` with the current window's cursor to the titans clients of its buffer.
local function send_cursor()
  local mode = vim.api.nvim_get_mode().mode
  if not config.prewarm or mode:find('^[vVsS\22\19]') then
    return -- a selection, not a resting cursor
  end
  for _, client in ipairs(clients(vim.api.nvim_get_current_buf())) do
    if client.initialized and not client:is_stopped() then
      local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
      client:notify('titans/cursor', { textDocument = params.textDocument, position = params.position })
    end
  end
end

local rest_timer = nil

--- (Re)starts the rest timer: only the last cursor move of a burst is sent.
local function schedule_cursor()
  rest_timer = rest_timer or vim.uv.new_timer()
  rest_timer:stop()
  rest_timer:start(M.rest_ms, 0, vim.schedule_wrap(send_cursor))
end

local function cursor_group(bufnr)
  return 'titans_lsp_cursor_' .. bufnr
end

--- Buffer-local autocmds that report the resting cursor; also reports where it is now.
local function watch_cursor(bufnr)
  local group = vim.api.nvim_create_augroup(cursor_group(bufnr), { clear = true })
  vim.api.nvim_create_autocmd({ 'CursorMoved', 'CursorMovedI', 'BufEnter', 'WinEnter', 'InsertEnter' }, {
    group = group,
    buffer = bufnr,
    callback = schedule_cursor,
    desc = 'Tell titans-lsp where the cursor rests',
  })
  schedule_cursor()
end

--- Runs a server command (`titans-lsp.*`) and calls on_result(result) with its answer.
function M.exec(command, on_result)
  local client = clients(0)[1] or clients(nil)[1]
  if not client then
    vim.notify('titans-lsp: the server is not running', vim.log.levels.WARN)
    return
  end
  local answered = false
  local sent = client:request('workspace/executeCommand', { command = command, arguments = {} }, function(err, result)
    answered = true
    if err then
      vim.notify(('titans-lsp: %s failed: %s'):format(command, err.message), vim.log.levels.ERROR)
    elseif on_result then
      on_result(result)
    end
  end)
  if not sent then
    vim.notify('titans-lsp: the server is not running', vim.log.levels.WARN)
    return
  end
  -- A stuck server would otherwise leave the command without a word, forever.
  vim.defer_fn(function()
    if not answered then
      vim.notify(('titans-lsp: %s: no answer from the server after %g s (still waiting; its log may say why)')
        :format(command, M.request_timeout_ms / 1000), vim.log.levels.WARN)
    end
  end, M.request_timeout_ms)
end

--- Sets the completion mode: updates the settings of every titans client (and of clients started
--- later) and pushes them with workspace/didChangeConfiguration; the server pulls them again.
function M.set_mode(mode)
  if not vim.tbl_contains(M.modes, mode) then
    vim.notify(('titans-lsp: unknown mode %q (one of %s)'):format(mode, table.concat(M.modes, ', ')), vim.log.levels.ERROR)
    return false
  end
  config.settings.titansLsp = config.settings.titansLsp or {}
  config.settings.titansLsp.mode = mode
  vim.lsp.config('titans', { settings = config.settings })
  for _, client in ipairs(clients(nil)) do
    client.settings = vim.tbl_deep_extend('force', client.settings or {}, { titansLsp = { mode = mode } })
    client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  end
  return true
end

--- The mode in the settings (what the server is told).
function M.mode()
  return (config.settings.titansLsp or {}).mode or 'concat'
end

--- A short text for 'statusline': mode, progress, last latency, today's acceptance in the mode.
function M.statusline()
  local client = clients(0)[1]
  if not client then
    if not vim.tbl_contains(config.filetypes, vim.bo.filetype) then
      return ''
    end
    local exited = M.exited
    if exited then
      return exited.signal ~= 0 and ('Titans: stopped (signal %d)'):format(exited.signal)
        or ('Titans: stopped (exit code %d)'):format(exited.code)
    end
    -- Neovim lists a client (and attaches buffers) only once the server has answered initialize.
    return M.starting > 0 and 'Titans: starting' or ''
  end
  local folder = client.workspace_folders and client.workspace_folders[1] and client.workspace_folders[1].uri
  local s = folder and M.status[folder] or nil
  local parts = { 'Titans: ' .. ((s and s.mode) or M.mode()) }
  local backend = s and type(s.backend) == 'table' and s.backend or nil
  if backend and backend.state == 'loading' then
    table.insert(parts, 'loading model')
  elseif backend and type(backend.lastError) == 'string' then
    table.insert(parts, 'backend error (:TitansStatus)')
  end
  if s and s.indexing ~= vim.NIL and s.indexing and s.indexing.done < s.indexing.total then
    table.insert(parts, ('indexing %d/%d'):format(s.indexing.done, s.indexing.total))
  end
  if s and s.priming ~= vim.NIL and s.priming and s.priming.done < s.priming.total then
    table.insert(parts, ('priming %d/%d'):format(s.priming.done, s.priming.total))
  end
  if s and type(s.lastLatencyMs) == 'number' then
    table.insert(parts, ('%d ms'):format(s.lastLatencyMs))
  end
  local today = s and s.acceptanceToday
  if type(today) == 'table' and type(today.rate) == 'number' and today.decided > 0 then
    table.insert(parts, ('%d%% accepted'):format(math.floor(100 * today.rate + 0.5)))
  end
  return table.concat(parts, ' · ')
end

local function create_commands()
  vim.api.nvim_create_user_command('TitansMode', function(opts)
    if opts.args == '' then
      print('titans-lsp mode: ' .. M.mode())
    elseif M.set_mode(opts.args) then
      print('titans-lsp mode: ' .. opts.args)
    end
  end, {
    nargs = '?',
    complete = function() return M.modes end,
    desc = 'Show or set the titans-lsp completion mode',
  })
  vim.api.nvim_create_user_command('TitansStatus', function()
    M.exec('titans-lsp.status', function(result) vim.print(result) end)
  end, { desc = 'Show the titans-lsp server status' })
  vim.api.nvim_create_user_command('TitansPrime', function()
    M.exec('titans-lsp.primeWorkspace', function() vim.notify('titans-lsp: workspace primed') end)
  end, { desc = 'Prime the titans-lsp memory with the workspace' })
  vim.api.nvim_create_user_command('TitansResetMemory', function()
    M.exec('titans-lsp.resetMemory', function() vim.notify('titans-lsp: memory reset') end)
  end, { desc = 'Reset the titans-lsp memory' })
end

--- The accept key: vim.lsp.inline_completion.get() inserts the ghost text and then runs the item's
--- command, `titans-lsp.accepted`, which tells the server the suggestion was accepted (titansLsp.telemetry).
local function map_accept_key(key)
  vim.keymap.set('i', key, function()
    if vim.lsp.inline_completion.get() then
      return ''
    end
    return key
  end, { expr = true, replace_keycodes = true, desc = 'Accept the titans-lsp inline completion' })
end

function M.setup(opts)
  config = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  if type(config.settings) ~= 'table' or type(config.settings.titansLsp) ~= 'table' then
    -- A string or number here made every later :TitansMode raise a Lua error; say so once, use the defaults.
    local given = type(config.settings) == 'table' and config.settings.titansLsp or config.settings
    vim.notify(("titans-lsp: settings.titansLsp must be a table such as { mode = 'concat' }, got %s %s; "
      .. 'using the defaults'):format(type(given), vim.inspect(given)), vim.log.levels.ERROR)
    config.settings = type(config.settings) == 'table' and config.settings or {}
    config.settings.titansLsp = vim.deepcopy(M.defaults.settings.titansLsp)
  end
  local problem = cmd_problem(config.cmd)
  if problem then
    vim.notify('titans-lsp: ' .. problem, vim.log.levels.ERROR)
  end
  if config.auth_token_file then
    local file = vim.fn.expand(config.auth_token_file)
    local ok, lines = pcall(vim.fn.readfile, file)
    if ok then
      config.init_options.authToken = vim.trim(table.concat(lines, '\n'))
    else -- one line, and the rest of setup goes on (the commands, the mappings)
      vim.notify(('titans-lsp: auth_token_file %s: cannot read it; the server will refuse the connection'):format(file),
        vim.log.levels.ERROR)
    end
  end
  vim.lsp.config('titans', {
    cmd = config.cmd or default_cmd,
    filetypes = config.filetypes,
    root_markers = config.root_markers,
    settings = config.settings,
    init_options = config.init_options,
    before_init = function()
      M.starting = M.starting + 1
    end,
    on_init = function(client)
      initialized[client.id] = true
      M.starting = math.max(0, M.starting - 1)
    end,
    on_exit = function(code, signal, client_id)
      if not initialized[client_id] then -- it ended before answering initialize
        M.starting = math.max(0, M.starting - 1)
      end
      initialized[client_id] = nil
      if code ~= 0 or (signal ~= 0 and signal ~= 15) then -- as Neovim's own "quit with exit code" warning
        M.exited = { code = code, signal = signal }
        vim.schedule(function() vim.cmd.redrawstatus({ bang = true }) end)
      end
    end,
    handlers = {
      ['titans/status'] = function(_, result)
        if result and result.folder then
          M.status[result.folder] = result
          vim.cmd.redrawstatus({ bang = true })
        end
      end,
    },
  })
  vim.lsp.enable('titans')
  local group = vim.api.nvim_create_augroup('titans_lsp', { clear = true })
  vim.api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if not (client and client.name == 'titans') then
        return
      end
      M.exited = nil
      if config.inline_completion then
        vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
      end
      if config.prewarm then
        watch_cursor(args.buf)
      end
    end,
  })
  vim.api.nvim_create_autocmd('LspDetach', {
    group = group,
    callback = function(args)
      local others = vim.tbl_filter(function(c)
        return c.id ~= args.data.client_id
      end, clients(args.buf))
      if #others == 0 then
        pcall(vim.api.nvim_del_augroup_by_name, cursor_group(args.buf))
      end
    end,
  })
  if config.accept_key then
    map_accept_key(config.accept_key)
  end
  create_commands()
end

return M
