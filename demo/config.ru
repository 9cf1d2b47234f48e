# The demo's sample app: a few Mastodon-shaped endpoints on Puma, Mastodon's own app server.
require "json"

counter = 0
lock = Mutex.new

run lambda { |env|
  req = Rack::Request.new(env)
  case req.path_info
  when "/"
    [200, { "content-type" => "text/plain" }, ["hello from puma, via herd\n"]]
  when "/api/v1/instance"
    body = { uri: "demo.local", title: "herd demo", version: "4.3.0",
             forwarded_for: env["HTTP_X_FORWARDED_FOR"] }
    [200, { "content-type" => "application/json" }, [JSON.generate(body) + "\n"]]
  when "/api/v1/flaky"
    # Every other call fails, as a sick pod would.
    n = lock.synchronize { counter += 1 }
    n.odd? ? [503, { "content-type" => "text/plain" }, ["sick\n"]] : [200, { "content-type" => "text/plain" }, ["ok\n"]]
  when "/api/v1/slow"
    sleep 2
    [200, { "content-type" => "text/plain" }, ["slow but fine\n"]]
  when "/api/v1/streaming"
    # Server-Sent Events, one per second, five in all.
    body = Enumerator.new do |y|
      5.times { |i| y << "event: tick\ndata: #{i}\n\n"; sleep 1 }
    end
    [200, { "content-type" => "text/event-stream", "cache-control" => "no-cache" }, body]
  else
    [404, { "content-type" => "text/plain" }, ["not found\n"]]
  end
}
