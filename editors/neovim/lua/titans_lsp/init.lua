-- titans-lsp for Neovim (0.12+: vim.lsp.config, vim.lsp.enable, vim.lsp.inline_completion).
-- Usage: require('titans_lsp').setup({ settings = { titansLsp = { mode = 'memory' } } })
local M = {}

M.modes = { 'none', 'concat', 'memory', 'ablation', 'hybrid' }

M.defaults = {
  -- Command that starts the server; `serve --stdio` is part of it. Default: titans-lsp on PATH,
  -- or the `.venv/bin/titans-lsp` of the project you open.
  cmd = nil,
  filetypes = { 'python' },
  root_markers = { 'pyproject.toml', 'setup.py', 'setup.cfg', '.git' },
  -- Sent to the server as workspace/configuration answers (section `titansLsp`).
  settings = { titansLsp = { mode = 'concat' } },
  -- initializationOptions: { model = ..., device = ..., dtype = ... }
  init_options = {},
  -- Insert-mode key that accepts the ghost text (falls back to the key itself); false: no mapping.
  accept_key = '<Tab>',
  -- Turn on vim.lsp.inline_completion for the server's buffers.
  inline_completion = true,
}

--- Latest `titans/status` notification per workspace folder URI.
M.status = {}

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

local function clients(bufnr)
  return vim.lsp.get_clients({ name = 'titans', bufnr = bufnr })
end

--- Runs a server command (`titans-lsp.*`) and calls on_result(result) with its answer.
function M.exec(command, on_result)
  local client = clients(0)[1] or clients(nil)[1]
  if not client then
    vim.notify('titans-lsp: the server is not running', vim.log.levels.WARN)
    return
  end
  client:request('workspace/executeCommand', { command = command, arguments = {} }, function(err, result)
    if err then
      vim.notify(('titans-lsp: %s failed: %s'):format(command, err.message), vim.log.levels.ERROR)
    elseif on_result then
      on_result(result)
    end
  end)
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

--- A short text for 'statusline': mode, progress, last latency.
function M.statusline()
  local client = clients(0)[1]
  if not client then
    return ''
  end
  local folder = client.workspace_folders and client.workspace_folders[1] and client.workspace_folders[1].uri
  local s = folder and M.status[folder] or nil
  local parts = { 'Titans: ' .. ((s and s.mode) or M.mode()) }
  if s and s.indexing ~= vim.NIL and s.indexing and s.indexing.done < s.indexing.total then
    table.insert(parts, ('indexing %d/%d'):format(s.indexing.done, s.indexing.total))
  end
  if s and s.priming ~= vim.NIL and s.priming and s.priming.done < s.priming.total then
    table.insert(parts, ('priming %d/%d'):format(s.priming.done, s.priming.total))
  end
  if s and type(s.lastLatencyMs) == 'number' then
    table.insert(parts, ('%d ms'):format(s.lastLatencyMs))
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
  vim.lsp.config('titans', {
    cmd = config.cmd or default_cmd,
    filetypes = config.filetypes,
    root_markers = config.root_markers,
    settings = config.settings,
    init_options = config.init_options,
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
  if config.inline_completion then
    vim.api.nvim_create_autocmd('LspAttach', {
      group = vim.api.nvim_create_augroup('titans_lsp', { clear = true }),
      callback = function(args)
        local client = vim.lsp.get_client_by_id(args.data.client_id)
        if client and client.name == 'titans' then
          vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
        end
      end,
    })
  end
  if config.accept_key then
    map_accept_key(config.accept_key)
  end
  create_commands()
end

return M
