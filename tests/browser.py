"""Opens a page in the headless Chromium of ``scripts/setup_browser.sh`` (``.browser/``),
driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages ended
by a NUL byte, read on the browser's fd 3 and written on its fd 4)."""

import json
import os
import pathlib
import select
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = ROOT / '.browser' / 'chromium'

# What the test reads back from the rendered page.
_INSPECT = """JSON.stringify({
  title: document.title,
  headings: Array.from(document.querySelectorAll('h1, h2')).map(h => h.textContent),
  tables: document.querySelectorAll('table').length,
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight, data: i.src.startsWith('data:')})),
})"""


class _Browser:
  def __init__(self):
    if not CHROMIUM.exists():
      raise RuntimeError(f'{CHROMIUM} is missing: run scripts/setup_browser.sh')
    to_browser, self._write = os.pipe()
    self._read, from_browser = os.pipe()

    def wire():  # dup first: dup2 onto the same number would keep close-on-exec
      inbound, outbound = os.dup(to_browser), os.dup(from_browser)
      os.dup2(inbound, 3)
      os.dup2(outbound, 4)

    lib = CHROMIUM.parent / 'lib'
    self.process = subprocess.Popen(
      [str(CHROMIUM), '--headless=new', '--no-sandbox', '--disable-gpu']
      + ['--remote-debugging-pipe', 'about:blank'],
      preexec_fn=wire,
      close_fds=False,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
      env={**os.environ, 'LD_LIBRARY_PATH': f'{lib / "lib"}:{lib}'},
    )
    os.close(to_browser)
    os.close(from_browser)
    self._buffer, self._id, self.events = b'', 0, []

  def _next(self, deadline: float) -> dict:
    while b'\0' not in self._buffer:
      ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.time()))
      if not ready:
        raise TimeoutError('the browser did not answer in time')
      chunk = os.read(self._read, 1 << 20)
      if not chunk:
        raise EOFError(f'the browser exited with code {self.process.wait(5)}')
      self._buffer += chunk
    raw, self._buffer = self._buffer.split(b'\0', 1)
    return json.loads(raw)

  def wait_for(self, predicate, timeout: float = 60.0) -> dict:
    deadline = time.time() + timeout
    while True:
      message = self._next(deadline)
      if predicate(message):
        return message
      self.events.append(message)

  def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
    self._id += 1
    message = {'id': self._id, 'method': method, 'params': params or {}}
    if session:
      message['sessionId'] = session
    os.write(self._write, json.dumps(message).encode() + b'\0')
    answer = self.wait_for(lambda m: m.get('id') == message['id'])
    if 'error' in answer:
      raise RuntimeError(f'{method}: {answer["error"]}')
    return answer['result']

  def close(self):
    try:
      self.call('Browser.close')
      self.process.wait(10)
    finally:
      if self.process.poll() is None:
        self.process.kill()
      os.close(self._read)
      os.close(self._write)


def render(page: pathlib.Path) -> tuple[dict, list[str]]:
  """``(what the browser found in the page, its errors)``: title, h1/h2 texts, table count and
  each image's load state and natural size; console errors, uncaught exceptions and failed
  loads, once the page's load event has fired."""
  browser = _Browser()
  try:
    target = browser.call('Target.createTarget', {'url': 'about:blank'})['targetId']
    session = browser.call('Target.attachToTarget', {'targetId': target, 'flatten': True})
    session = session['sessionId']
    for domain in ('Runtime', 'Log', 'Page'):
      browser.call(f'{domain}.enable', session=session)
    browser.call('Page.navigate', {'url': page.as_uri()}, session)
    browser.wait_for(lambda m: m.get('method') == 'Page.loadEventFired')
    found = browser.call(
      'Runtime.evaluate', {'expression': _INSPECT, 'returnByValue': True}, session
    )
    errors = []
    for event in browser.events:
      method, params = event.get('method'), event.get('params', {})
      if method == 'Runtime.exceptionThrown':
        errors.append(params['exceptionDetails']['text'])
      elif method == 'Runtime.consoleAPICalled' and params['type'] in ('error', 'warning'):
        errors.append(str(params['args']))
      elif method == 'Log.entryAdded' and params['entry']['level'] in ('error', 'warning'):
        errors.append(params['entry']['text'])
    return json.loads(found['result']['value']), errors
  finally:
    browser.close()
